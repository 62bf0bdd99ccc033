"""reconciliation, the business middle platform's T+1 three-way matching: the platform's own
transactions (payment-core) against each channel's trade bill (read through payment-core's
ExportChannelBill) and the insurer's 3201 totals."""
