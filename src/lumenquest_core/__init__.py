"""lumenquest core: pure billing domain, ports and services."""
