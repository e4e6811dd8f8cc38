"""The example gene regulatory network (GRN) service: ``uvicorn examples.grn_app.app:app``."""
