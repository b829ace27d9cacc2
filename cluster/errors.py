"""Errors that are the user's to fix: printed as one clear message, no traceback."""

from cluster.inventory import InventoryError
from cluster.launch.bring_up import BringUpError
from cluster.launch.demo_model import DemoModelMissing
from cluster.pipeline.pipeline_client import PipelineError
from cluster.planning.placement import PlanError
from cluster.state import StateError
from deploy.install import WheelBuildError
from deploy.local import WorkerStartError
from deploy.probe import PreflightError
from deploy.shards import ShardError
from deploy.ssh import RemoteCommandError, SshError
from node.gguf import GGUFImportError
from node.model_config import ModelDirError
from node.model_sizes import ModelSizeError

USER_ERRORS = (
    BringUpError,
    DemoModelMissing,
    GGUFImportError,
    InventoryError,
    ModelDirError,
    ModelSizeError,
    PipelineError,
    PlanError,
    PreflightError,
    RemoteCommandError,
    ShardError,
    SshError,
    StateError,
    WheelBuildError,
    WorkerStartError,
)
