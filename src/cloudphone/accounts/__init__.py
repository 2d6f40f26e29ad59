"""Tenants (providers), their accounts and devices, and each account's feature configuration."""
