"""Label keys and values shared by the operator, the router and the chart (one place)."""

NAME = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"
INSTANCE = "app.kubernetes.io/instance"
MODEL = "tinyimg.io/model"
REVISION = "tinyimg.io/revision"  # a model pod's weight revision (ModelSpec.weight_revision)
TRACK = "tinyimg.io/track"  # canary on a canary revision's pods (their Deployment's selector)
TRACK_CANARY = "canary"
# Set by the router when a request waits for a model with no ready pod; read by the autoscaler.
DEMAND_ANNOTATION = "tinyimg.io/demand"

APP_NAME = "tinyimg"
OPERATOR_NAME = "tinyimg-operator"
COMPONENT_MODEL_SERVER = "model-server"
COMPONENT_ROUTER = "router"
COMPONENT_OPERATOR = "operator"

GROUP = "tinyimg.io"
VERSION = "v1alpha1"
KIND = "ImageModel"
PLURAL = "imagemodels"
SHORT_NAME = "imgm"

DEFAULT_PORT = 8000

# cache.preload: the loader Job writes its markers into this directory of the model cache, and the
# operator tells a model pod where it is through this variable (tinyimg.runtime.preload).
PRELOAD_MARKERS = "tinyimg-preload"
PRELOAD_MARKER_ENV = "TINYIMG_PRELOAD_MARKER"


def model_server_labels(model: str) -> dict[str, str]:
    """The labels every object of one model carries; also the Deployment's pod selector."""
    return {NAME: APP_NAME, COMPONENT: COMPONENT_MODEL_SERVER, MODEL: model}
