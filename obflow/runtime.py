"""How every component starts: load and validate the config, or refuse to start (R10.4)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from obflow.config import ConfigError, DataHubConfig, ObflowConfig, load_config, secret_values
from obflow.log import Fault, log_fault, register_secrets, setup_logging

EXIT_INVALID_CONFIG = 2
EXIT_FAILED = 1


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


def refuse_start_without_datahub(component: str, exc: BaseException, config: DataHubConfig) -> int:
    """Log why DataHub cannot be used at start (``exc``, from the SDK or its transport) and give the exit
    code: 2 for an endpoint whose certificate is not trusted (the config must change), 1 otherwise."""
    from obflow.datahub.client import untrusted_endpoint  # the datahub extra: not every component has it

    logger = logging.getLogger(f"obflow.{component}")
    untrusted = untrusted_endpoint(exc, config)
    if untrusted:
        log_fault(logger, Fault.CONFIG_INVALID, f"{component} refuses to start: {untrusted}", level=logging.ERROR)
        return EXIT_INVALID_CONFIG
    message = f"{component} cannot start: DataHub at {config.endpoint} is not usable: {type(exc).__name__}: {exc}"
    log_fault(logger, Fault.DATAHUB_UNREACHABLE, message, level=logging.ERROR)
    return EXIT_FAILED
