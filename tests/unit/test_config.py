"""Settings read from the environment: the garbage-collector thresholds every service applies."""

from __future__ import annotations

import gc

import pytest

from tally.config import DEFAULT_GC_THRESHOLDS, Settings
from tally.runner import tune_gc


class TestGcThresholds:
    def test_default_raises_the_young_generation_threshold(self, monkeypatch):
        monkeypatch.delenv("TALLY_GC_THRESHOLDS", raising=False)
        assert Settings.from_env().gc_thresholds == (50_000, 20, 100)
        assert DEFAULT_GC_THRESHOLDS == "50000,20,100"

    def test_python_keeps_the_interpreter_defaults(self, monkeypatch):
        monkeypatch.setenv("TALLY_GC_THRESHOLDS", "python")
        assert Settings.from_env().gc_thresholds is None

    def test_explicit_thresholds(self, monkeypatch):
        monkeypatch.setenv("TALLY_GC_THRESHOLDS", "1000,10,10")
        assert Settings.from_env().gc_thresholds == (1000, 10, 10)

    @pytest.mark.parametrize("text", ["1000,10", "a,b,c", "1000,-1,10"])
    def test_malformed_thresholds_are_refused(self, monkeypatch, text):
        monkeypatch.setenv("TALLY_GC_THRESHOLDS", text)
        with pytest.raises(ValueError):
            Settings.from_env()

    def test_tune_gc_applies_and_freezes(self):
        before = gc.get_threshold()
        try:
            tune_gc((12_345, 11, 12))
            assert gc.get_threshold() == (12_345, 11, 12)
            assert gc.get_freeze_count() > 0
        finally:
            gc.unfreeze()
            gc.set_threshold(*before)

    def test_tune_gc_without_thresholds_changes_nothing(self):
        before = gc.get_threshold()
        tune_gc(None)
        assert gc.get_threshold() == before
