import gc

from safecity.kernel.heap import THRESHOLDS, settle_heap


def test_settle_heap_sets_the_collector_thresholds_and_freezes_what_is_alive() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        alive = [{"n": i} for i in range(1000)]  # tracked containers alive at the call
        frozen_before = gc.get_freeze_count()
        settle_heap()
        assert gc.get_threshold() == THRESHOLDS
        assert THRESHOLDS[0] > 700  # fewer young collections than CPython's default
        assert gc.get_freeze_count() >= frozen_before + len(alive)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
