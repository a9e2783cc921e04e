"""pytest plugin `fwemu_contracts` (entry point in pyproject): options, fixtures, the `cloud` marker.

Loaded in every pytest run of the repository, so it imports nothing heavy at import time: targets,
clients, hypothesis and torch are imported inside the fixtures that need them.

Options:
  --fw-target URL        run against a running fwemu (or, with FIREWORKS_API_KEY, the real service);
                         default: a fresh in-process emulator
  --fw-driver SPEC       client (default), sdk, cookbook[=PATH] or module:Class (contracts/README.md)
  --fw-max-examples N    examples per contract run (default: the "ci" profile)
  --fw-seed S            Hypothesis seed for contract runs (default 0: reproducible)
  --fw-shrink-seconds T  time allowed to shrink one failure (default 60)

Fixtures: fw_target (session), fw_account (a fresh account per test where the target can mint
one), fw_control_plane, fw_trainer, fw_driver, fw_contracts (run the suite: returns a Report).

Tests marked `cloud` need the real service: they are deselected (reported as deselected, never as
passed) unless FIREWORKS_API_KEY is set and --fw-target is given.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("fwemu-contracts", "fwemu contract suite")
    group.addoption("--fw-target", default=None, metavar="URL",
                    help="contract target: URL of a running fwemu or the real service; default in-process")
    group.addoption("--fw-driver", default="client", metavar="SPEC",
                    help="client under test: client (ours, default), sdk (the fireworks-ai SDK), cookbook[=PATH] "
                         "(a cookbook checkout's TrainingCheckpoints) or module:Class (contracts/README.md)")
    group.addoption("--fw-max-examples", type=int, default=None, metavar="N",
                    help="Hypothesis examples per contract run (default: the ci profile)")
    group.addoption("--fw-seed", type=int, default=0, metavar="S", help="Hypothesis seed for contract runs")
    group.addoption("--fw-shrink-seconds", type=float, default=60.0, metavar="T",
                    help="time to shrink one contract failure to a short program")


def pytest_configure(config):
    spec = config.getoption("--fw-driver", default="client")
    if spec not in ("client", "sdk"):
        from fwemu.contracts.driver_api import DriverSpecError
        from fwemu.contracts.drivers import driver_class

        try:
            driver_class(spec)
        except DriverSpecError as exc:
            raise pytest.UsageError(f"--fw-driver {spec}: {exc}") from None
    config.addinivalue_line("markers", "cloud: needs the real Fireworks service (FIREWORKS_API_KEY + --fw-target)")


def cloud_enabled(config) -> bool:
    return bool(os.environ.get("FIREWORKS_API_KEY")) and bool(config.getoption("--fw-target"))


def pytest_collection_modifyitems(config, items):
    if cloud_enabled(config):
        return
    cloud = [item for item in items if item.get_closest_marker("cloud")]
    if cloud:
        items[:] = [item for item in items if not item.get_closest_marker("cloud")]
        config.hook.pytest_deselected(items=cloud)


def pytest_report_header(config):
    if config.getoption("--fw-target") or config.getoption("--fw-driver") != "client":
        return (f"fwemu contracts: target {config.getoption('--fw-target') or 'in-process'}, "
                f"driver {config.getoption('--fw-driver')}")
    return None


@pytest.fixture(scope="session")
def fw_target(pytestconfig):
    """The contract target for this session (closed at the end)."""
    from fwemu.contracts.targets import make_target

    target = make_target(pytestconfig.getoption("--fw-target"))
    yield target
    target.close()


@pytest.fixture
def fw_account(fw_target):
    """A fresh account (API key) per test on the in-process target; the given key elsewhere."""
    return fw_target.new_account()


@pytest.fixture
def fw_control_plane(fw_target, fw_account):
    """Our ControlPlaneClient on the target, authenticated as fw_account."""
    from fwemu.client.control_plane import ControlPlaneClient
    from fwemu.contracts.drivers import FAST_RETRY

    cp = ControlPlaneClient(fw_target.base_url, fw_account.api_key, transport=fw_target.transport(),
                            retry=FAST_RETRY, gateway_url=fw_target.base_url, operation_poll_s=0.0)
    yield cp
    cp.close()


@pytest.fixture
def fw_trainer(fw_target, fw_account, fw_control_plane):
    """A TrainerGatewayClient with an open session on a new full-parameter job (`.job_id` names it)."""
    import uuid

    from fwemu.client.trainer_client import TrainerGatewayClient
    from fwemu.contracts.drivers import FAST_RETRY

    job = fw_control_plane.create_job(fw_target.base_model, 0, job_id=f"fw-trainer-{uuid.uuid4().hex[:8]}")
    fw_control_plane.wait_until_running(job.job_id, poll_interval_s=0.01, timeout_s=120)
    gateway = TrainerGatewayClient(fw_control_plane.gateway_url_for_job(job.job_id), fw_account.api_key,
                                   transport=fw_target.transport(), retry=FAST_RETRY, heartbeat_interval_s=None)
    gateway.create_session()
    gateway.job_id = job.job_id
    yield gateway
    gateway.close()
    if not fw_target.has("restart"):  # a shared or real target: leave nothing running
        fw_control_plane.delete_job(job.job_id)


@pytest.fixture
def fw_driver(pytestconfig, fw_target, fw_account):
    """The driver chosen by --fw-driver, for fw_account."""
    from fwemu.contracts.drivers import make_driver

    driver = make_driver(pytestconfig.getoption("--fw-driver"), fw_target, fw_account)
    yield driver
    driver.close()


@pytest.fixture
def fw_contracts(pytestconfig, fw_target):
    """`fw_contracts(**overrides) -> Report`: the contract suite on fw_target with the session's options."""
    from fwemu.contracts.runner import run_contracts

    def run(target=None, **overrides):
        kwargs = dict(driver=pytestconfig.getoption("--fw-driver"), seed=pytestconfig.getoption("--fw-seed"),
                      max_examples=pytestconfig.getoption("--fw-max-examples"), profile="ci",
                      shrink_seconds=pytestconfig.getoption("--fw-shrink-seconds"))
        kwargs.update(overrides)
        return run_contracts(target or fw_target, **kwargs)
    return run
