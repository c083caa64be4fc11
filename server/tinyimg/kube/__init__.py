"""The Kubernetes API as the router and the operator both reach it (torch-free, kopf-free).

``connection``: where the API server is and how to prove who we are (in-cluster service account
or kubeconfig), turned into httpx client options; ``errors``: a failed call as one exception with
the API server's own message; ``objects``: pure readings of pods and owner references.
"""
