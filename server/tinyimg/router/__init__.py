"""The router: one HTTP entry point in front of many model-server processes or pods.

It imports no torch and no diffusers (a test checks this): it only needs fastapi, httpx and
prometheus-client. Discovery (static or Kubernetes) fills a backend table; the poller keeps each
pod's queue depth fresh; the balancer picks the least-loaded ready pod; forward.py streams the
request through.
"""
