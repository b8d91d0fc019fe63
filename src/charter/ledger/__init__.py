"""The ledger: typed events, hash chains and the stores that keep them."""
