"""The example's routes."""

from django.urls import path

from billing_site import views

urlpatterns = [
    path("customers", views.create_customer),
    path("subscriptions", views.subscribe),
    path("customers/<str:customer_id>/invoices", views.invoices),
]
