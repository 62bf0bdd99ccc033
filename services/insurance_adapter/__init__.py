"""insurance-adapter: the platform's single door to the medical-insurance platform (NHSA)."""
