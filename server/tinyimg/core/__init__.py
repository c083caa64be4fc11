"""The bottom of the house, shared by both apps (the model server: ``tinyimg.api`` over
``runtime`` and ``families``; the router: ``tinyimg.router``): errors and their codes, structured
logs, labels, API keys and limits, job ids and the router's job headers, model states. It imports
nothing else of ``tinyimg``; the edge (``tinyimg.http``), the Kubernetes client (``tinyimg.kube``),
the schema (``tinyimg.spec``) and the wire shapes (``tinyimg.wire``) stand on it."""
