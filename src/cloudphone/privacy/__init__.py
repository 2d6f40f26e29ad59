"""Privacy operations: audit, retention, crypto-shredding and the erasure ledger, data-subject
requests, policy notices and the disclosure log — driven by the data map of ``core.datamap``."""
