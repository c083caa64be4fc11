"""The HTTP edge both services share (model server and router), torch-free: request ids, the
access log, size and time limits, the JSON error shape for every answer, and the uvicorn setup
(its protocol subclass bounds headers and slow or idle connections)."""
