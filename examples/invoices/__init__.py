"""Invoices: match supplier invoices to purchase orders and approve, hold or query them."""
