"""MLflow "model from code" entry: the registered model is this file plus its artifacts (checkpoint,
serving settings), so loading it executes reviewed code instead of unpickling an object."""
from mlflow.models import set_model

from orchestration.pyfunc_model import VimogenPyfunc

set_model(VimogenPyfunc())
