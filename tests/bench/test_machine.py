"""fastoptim.bench.machine: the load other processes put on the machine."""
from fastoptim.bench import machine


def test_cpu_meter_subtracts_this_process_and_divides_by_wall_time(monkeypatch):
    """The meter's arithmetic with the clocks replaced: (system busy - own CPU) / wall."""
    clocks = {"wall": 100.0, "busy": 50.0, "own": 3.0}
    monkeypatch.setattr(machine.time, "perf_counter", lambda: clocks["wall"])
    monkeypatch.setattr(machine.time, "process_time", lambda: clocks["own"])
    monkeypatch.setattr(machine, "_system_busy_seconds", lambda: clocks["busy"])
    meter = machine.CpuMeter().start()
    clocks.update(wall=102.0, busy=55.0, own=4.0)  # 5 s busy, 1 s of it ours, over 2 s
    assert meter.stop() == 2.0
    meter = machine.CpuMeter().start()
    clocks.update(wall=103.0, busy=55.5, own=4.5)  # only our own work: nobody else
    assert meter.stop() == 0.0
    monkeypatch.setattr(machine, "_system_busy_seconds", lambda: None)  # no /proc/stat
    assert machine.CpuMeter().start().stop() is None
