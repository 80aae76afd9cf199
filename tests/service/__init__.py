"""Scenario tests of the ``Billing`` facade on the memory adapters and the test clock."""
