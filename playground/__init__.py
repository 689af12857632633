"""The web playground: a Gradio page over a registered model or a checkpoint (`vimogen playground`).

A thin serving layer beside `orchestration/`: it may import Gradio and MLflow, which the pure
library `vimogen_core` never does; generation and export are the library's own functions.
"""
