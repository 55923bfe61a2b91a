"""The zooscope service: settings, database, blob storage, HTTP API and auth.

It validates, stores, enqueues and reads results; it never runs a model in a request.
"""
