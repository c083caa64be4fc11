"""Jobs that outlive a pod: results in a store (a directory or an S3 bucket) behind expiring
capability URLs, and (with a Redis) the shared queue, state and events every pod and router reads."""
