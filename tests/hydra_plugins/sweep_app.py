"""A tiny Hydra app for the plugin tests: writes ``<out>/<x>-<y>.json``; ``x=2`` fails;
``x=5`` kills its own process (as the out-of-memory killer would)."""

import json
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(config_path=None, config_name=None, version_base="1.3")
def main(cfg: DictConfig) -> int:
    print(f"job x={cfg.x} y={cfg.y}")
    if cfg.x == 2:
        raise ValueError("x=2 is refused by the test app")
    if cfg.x == 5:
        import signal
        import time

        time.sleep(0.5)  # let the other worker start its job: the pool breaks under it
        os.kill(os.getpid(), signal.SIGKILL)
    info = {"x": cfg.x, "y": cfg.y, "omp": os.environ.get("OMP_NUM_THREADS"), "pid": os.getpid()}
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / f"{cfg.x}-{cfg.y}.json").write_text(json.dumps(info))
    return int(cfg.x)


if __name__ == "__main__":
    main()
