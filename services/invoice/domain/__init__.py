"""Pure domain of the invoice service: plans as seen by billing, pricing, invoices."""
