"""Runnable examples for gennet-toolkit."""
