"""MessageHub: windows, latest values, modes, no device reads before means(), checkpoint state."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from pluginloop.hub import MessageHub


def test_means_are_window_averages_weighted_by_count_and_clear_the_window() -> None:
    hub = MessageHub()
    hub.update("loss", 1.0)
    hub.update("loss", 4.0, count=3)  # the mean of 3 samples
    assert hub.means() == {"loss": pytest.approx((1.0 + 12.0) / 4)}
    assert hub.means() == {}
    hub.update("loss", 2.0)
    assert hub.means(clear=False) == {"loss": 2.0}
    assert hub.means() == {"loss": 2.0}


def test_latest_holds_the_last_value_of_windowed_and_set_names() -> None:
    hub = MessageHub()
    hub.update("loss", 1.0)
    hub.update("loss", 3.0)
    hub.set("lr", 0.1)
    assert hub.latest == {"loss": 3.0, "lr": 0.1}
    assert hub.get("lr") == 0.1
    assert hub.get("missing", default=-1.0) == -1.0


def test_set_values_are_not_averaged_and_unaveraged_lists_only_them() -> None:
    hub = MessageHub()
    hub.set("lr", 0.1)
    hub.set("lr", 0.2)
    hub.update("loss", 1.0)
    assert hub.means() == {"loss": 1.0}
    # loss had a window (read just now): it is not an unaveraged value.
    assert hub.unaveraged() == {"lr": 0.2}


def test_eval_names_have_their_own_windows_returned_without_prefix() -> None:
    hub = MessageHub()
    hub.update("time", 1.0)
    hub.update("val/time", 5.0)
    hub.set("val/acc", 0.9)
    hub.set("test/acc", 0.8)
    assert hub.means("train") == {"time": 1.0}
    assert hub.unaveraged("train") == {}
    assert hub.unaveraged("val") == {"acc": 0.9}
    assert hub.means("val") == {"time": 5.0}
    assert hub.means("val") == {}
    assert hub.unaveraged("test") == {"acc": 0.8}


def test_cpu_tensors_are_stored_as_floats_detached() -> None:
    hub = MessageHub()
    weight = torch.tensor(2.0, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # item() of a tensor that requires grad warns
        hub.update("loss", weight * 3)
    assert hub.latest["loss"] == 6.0 and type(hub.latest["loss"]) is float
    assert hub.means() == {"loss": 6.0}


def test_device_tensors_are_summed_without_reading_them(device_scalars: Any) -> None:
    hub = MessageHub()
    published = [device_scalars.of(v) for v in (1.0, 2.0, 6.0)]
    for value in published:
        hub.update("loss", value)
    hub.update("loss", device_scalars.of(3.0), count=2)
    assert device_scalars.reads() == 0
    assert isinstance(hub.latest["loss"], torch.Tensor)
    assert hub.means() == {"loss": pytest.approx((1 + 2 + 6 + 6) / 5)}
    assert device_scalars.reads() == 1  # one read for the window, at means()
    # The hub sums into a tensor of its own: the published values are unchanged.
    assert [v.as_subclass(torch.Tensor).item() for v in published] == [1.0, 2.0, 6.0]


def test_meta_tensors_cannot_be_read_so_updates_never_read_them() -> None:
    hub = MessageHub()
    for _ in range(5):  # .item() on a meta tensor raises: any read inside update fails here
        hub.update("loss", torch.tensor(1.0, device="meta"))
    with pytest.raises((RuntimeError, NotImplementedError)):
        hub.means()


def test_low_precision_values_are_summed_in_float32(device_scalars: Any) -> None:
    hub = MessageHub()
    for _ in range(300):  # bfloat16 alone stops counting at 256: 256 + 1 == 256
        hub.update("loss", device_scalars.of(1.0, torch.bfloat16))
    assert hub._sums["loss"].dtype == torch.float32
    assert hub.means() == {"loss": 1.0}


def test_a_tensor_that_is_not_a_scalar_is_refused_with_its_name(device_scalars: Any) -> None:
    hub = MessageHub()
    with pytest.raises(ValueError, match=r"'loss'.*shape \(3,\)"):
        hub.update("loss", device_scalars.wrap(torch.ones(3)))


def test_state_dict_round_trip_keeps_open_windows_and_latest(device_scalars: Any) -> None:
    hub = MessageHub()
    hub.update("grad_norm", 1.0)
    hub.means()  # grad_norm's window was read: it stays a windowed name after a resume
    hub.update("loss", device_scalars.of(2.0))
    hub.set("lr", 0.1)
    restored = MessageHub()
    restored.load_state_dict(hub.state_dict())
    restored.update("loss", device_scalars.of(4.0))  # a device value joins a float window
    assert restored.means() == {"loss": pytest.approx(3.0)}
    assert restored.latest["lr"] == 0.1
    assert restored.unaveraged() == {"lr": 0.1}


def test_state_dict_of_an_older_checkpoint_without_cleared_names_loads() -> None:
    hub = MessageHub()
    hub.load_state_dict({"latest": {"lr": 0.1}, "sums": {"loss": 3.0}, "counts": {"loss": 2}})
    assert hub.means() == {"loss": 1.5}


class MeanSource:
    """A source: keeps its own sum of values and publishes their mean, counting its calls."""

    def __init__(self) -> None:
        self.total, self.n, self.calls = 0.0, 0, 0

    def add(self, value: float) -> None:
        self.total, self.n = self.total + value, self.n + 1

    def publish(self, hub: MessageHub) -> None:
        self.calls += 1
        if self.n:
            hub.update("x", self.total / self.n, count=self.n)
            hub.set("x_count", float(self.n))
            self.total, self.n = 0.0, 0


def test_a_source_publishes_before_every_read_and_windows_stay_exact() -> None:
    hub, source = MessageHub(), MeanSource()
    hub.add_source(source.publish)
    hub.add_source(source.publish)  # once is enough: no double publishing
    for value in (1.0, 2.0, 6.0):
        source.add(value)
    hub.update("x", 3.0)  # a direct update joins the same window
    assert source.calls == 0, "publishing waits for a read"
    latest = hub.latest
    assert latest["x"] == 3.0 and latest["x_count"] == 3.0  # latest: the mean since the last read
    assert source.calls == 1
    assert hub.means() == {"x": 3.0}  # (1 + 2 + 6 + 3) / 4
    source.add(5.0)
    assert hub.get("x") == 5.0
    assert hub.unaveraged() == {"x_count": 1.0}
    source.add(7.0)
    state = hub.state_dict()  # a checkpoint holds what was pending too
    assert state["sums"]["x"] == 12.0 and state["counts"]["x"] == 2
    restored = MessageHub()
    restored.load_state_dict(state)
    assert restored.means() == {"x": 6.0}


def test_running_sum_reads_cpu_values_and_keeps_device_ones_on_the_device(device_scalars: Any) -> None:
    from pluginloop.hub import running_sum

    total = running_sum(0.0, torch.tensor(1.5, requires_grad=True) * 1.0)
    assert type(total) is float and total == 1.5
    device_total = running_sum(0.0, device_scalars.of(1.0, torch.bfloat16))
    device_total = running_sum(device_total, device_scalars.of(2.5))
    assert isinstance(device_total, torch.Tensor) and device_total.dtype == torch.float32
    assert device_scalars.reads() == 0, "a device value was copied to the host"
    hub = MessageHub()
    hub.update("loss", device_total / 2, count=2)
    assert device_scalars.reads() == 0
    assert hub.means() == {"loss": 1.75}  # (1.0 + 2.5) / 2


def test_a_removed_source_is_no_longer_called() -> None:
    hub, source = MessageHub(), MeanSource()
    hub.add_source(source.publish)
    hub.remove_source(source.publish)
    hub.remove_source(source.publish)  # not a source any more: nothing happens
    source.add(1.0)
    assert hub.means() == {} and source.calls == 0


def test_sum_of_stacks_scalar_tensors_and_sums_them_where_they_are(device_scalars: Any) -> None:
    from pluginloop.hub import sum_of

    cpu = sum_of([torch.tensor(1.5, requires_grad=True) * 1.0, torch.tensor(2.0)])
    assert isinstance(cpu, torch.Tensor) and cpu.item() == 3.5 and not cpu.requires_grad
    low = sum_of([torch.tensor(v, dtype=torch.bfloat16) for v in (256.0, 1.0, 1.0)])
    assert low.dtype == torch.float32 and low.item() == 258.0  # in bfloat16, 256 + 1 == 256
    assert sum_of([torch.tensor(1.0, dtype=torch.float64)]).dtype == torch.float64
    on_device = sum_of([device_scalars.of(1.0), device_scalars.of(2.5)])
    assert device_scalars.reads() == 0, "a device value was copied to the host"
    assert float(on_device) == 3.5


def test_sum_of_adds_what_it_cannot_stack_one_by_one() -> None:
    from pluginloop.hub import sum_of

    assert sum_of([1.0, 2]) == 3.0
    assert sum_of([torch.tensor([1.0]), torch.tensor(2.0), 0.5]) == 3.5  # shapes (1,) and (): not stackable
    with pytest.raises(RuntimeError):  # a whole tensor is not one value: never summed silently
        sum_of([torch.ones(2), torch.ones(2)])
