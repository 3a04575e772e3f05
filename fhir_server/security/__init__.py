"""Policy: who may do what. Every interaction passes `authorize` first."""
