import sys

from node.blas_preload import reexec_with_blas

reexec_with_blas()  # before MLX is imported: the system OpenBLAS on Linux (node/blas_preload.py)

from node.worker_main import main  # noqa: E402

sys.exit(main())
