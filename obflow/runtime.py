"""How every component starts: load and validate the config, or refuse to start (R10.4)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from obflow.config import ConfigError, ObflowConfig, load_config, secret_values
from obflow.log import Fault, log_fault, register_secrets, setup_logging

EXIT_INVALID_CONFIG = 2


def start_component(component: str, config_path: str | Path | None) -> ObflowConfig:
    """The validated config with logging set up from it; exits with code 2 and every problem if invalid."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        setup_logging()
        log_fault(
            logging.getLogger(f"obflow.{component}"),
            Fault.CONFIG_INVALID,
            f"{component} refuses to start: {exc}",
            level=logging.ERROR,
            problems=len(exc.problems),
        )
        sys.exit(EXIT_INVALID_CONFIG)
    register_secrets(secret_values(config))
    setup_logging(config.logging.level, config.logging.format)
    return config
