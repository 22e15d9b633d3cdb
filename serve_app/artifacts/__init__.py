"""Artifacts: the versioned bundle a preprocessing job writes and every replica loads, the event
log the ingress writes and the jobs read back, and the storage (local disk or S3) both live on.
Imports the core only, never the serving shell.
"""
