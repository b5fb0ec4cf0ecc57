"""Simulated pulse sources: shapes, reproducibility and statistics."""

from __future__ import annotations

import numpy as np
import pytest

from mimocorb2.sim.pulses import (
    DEFAULT_LINES,
    GammaSource,
    MuonDetector,
    PulseSimulator,
    compton_energies,
    pulse_template,
)


def test_template_normalised_and_causal() -> None:
    template, start = pulse_template(100, 2.0, 10.0)
    assert template.shape == (200,)
    assert template[:start].max() == 0.0
    assert template.max() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        pulse_template(100, 10.0, 2.0)


def test_pulse_simulator_heights_and_seed() -> None:
    a = PulseSimulator(("ch1", "ch2"), 300, seed=5, noise=0.0, extra_pulse_probability=0.0)
    b = PulseSimulator(("ch1", "ch2"), 300, seed=5, noise=0.0, extra_pulse_probability=0.0)
    heights = []
    for _ in range(200):
        ea, eb = a.event(), b.event()
        np.testing.assert_array_equal(ea, eb)
        assert ea.dtype.names == ("ch1", "ch2")
        for ch in ("ch1", "ch2"):
            truth = a.last_truth["heights"][ch]
            # a noiseless pulse placed at the trigger sample peaks there with its full height
            assert int(np.argmax(ea[ch])) == a.trigger_position
            assert ea[ch].max() == pytest.approx(truth, rel=1e-5)
            heights.append(truth)
    heights = np.array(heights)
    assert heights.min() >= a.min_amplitude
    assert np.mean(heights) - a.min_amplitude == pytest.approx(a.amplitude, rel=0.15)


def test_pulse_simulator_noise_level() -> None:
    sim = PulseSimulator(("ch1",), 2000, seed=1, noise=0.01, extra_pulse_probability=0.0, trigger_position=1900)
    e = sim.event()
    assert np.std(e["ch1"][:1500]) == pytest.approx(0.01, rel=0.1)


def test_muon_detector_statistics() -> None:
    det = MuonDetector(seed=11, double_pulse_fraction=0.3, accidental_probability=0.0, noise=0.0)
    n = 3000
    decays = []
    for _ in range(n):
        e = det.event()
        assert e.dtype.names == ("ch1", "ch2", "ch3", "ch4")
        assert len(e) == 4250
        t = det.last_truth["decay_time_us"]
        # every event has the coincident muon pulse in all four channels at the trigger
        # (unless a very early decay pulse overlaps it)
        if t is None or t > 0.1:
            for ch in e.dtype.names:
                assert int(np.argmax(e[ch][: det.trigger_position + 20])) == det.trigger_position
        if t is not None:
            decays.append(t)
    decays = np.array(decays)
    assert len(decays) / n == pytest.approx(0.3, abs=0.03)
    # exponential with the muon lifetime: mean and median
    assert decays.mean() == pytest.approx(2.2, rel=0.08)
    assert np.median(decays) == pytest.approx(2.2 * np.log(2), rel=0.1)
    assert det.window_us == pytest.approx(16.0)


def test_muon_decay_pulse_is_visible() -> None:
    det = MuonDetector(seed=3, double_pulse_fraction=1.0, accidental_probability=0.0, noise=0.0)
    for _ in range(50):
        e = det.event()
        t = det.last_truth["decay_time_us"]
        pos = det.trigger_position + int(round(t * 1000 / det.sample_time_ns))
        if pos + 5 < det.data_length and t > 0.3:
            total = sum(e[ch] for ch in e.dtype.names)
            assert int(np.argmax(total[pos - 20 : pos + 20])) + pos - 20 == pos


def test_muon_negative_polarity() -> None:
    det = MuonDetector(seed=1, negative=True, noise=0.0)
    e = det.event()
    assert e["ch1"].min() < 0 and e["ch1"].max() <= 1e-6


def test_compton_continuum_below_edge() -> None:
    rng = np.random.default_rng(2)
    t = compton_energies(661.657, 20000, rng)
    edge = 661.657 * (2 * 661.657 / 511) / (1 + 2 * 661.657 / 511)
    assert t.min() >= 0 and t.max() <= edge
    assert edge == pytest.approx(477.3, abs=0.5)
    # Klein-Nishina at 662 keV rises towards the edge: more counts near the edge than in the middle
    hist, _ = np.histogram(t, bins=10, range=(0, edge))
    assert hist[-1] > hist[4]


def test_gamma_source_lines() -> None:
    src = GammaSource(seed=4, background_fraction=0.0)
    e = src.deposits(60000)
    for line in DEFAULT_LINES:
        window = e[np.abs(e - line.energy) < 2 * src.sigma(line.energy)]
        # the peak centroid sits on the line
        assert np.median(window) == pytest.approx(line.energy, rel=0.01)
    # photopeak fraction of a pure Cs-137 source: counts within +-3 sigma of its line
    cs = GammaSource(lines=[(661.657, 1.0)], seed=5, background_fraction=0.0)
    e = cs.deposits(20000)
    in_peak = np.sum(np.abs(e - 661.657) < 3 * cs.sigma(661.657))
    assert in_peak / len(e) == pytest.approx(cs.photo_fraction, rel=0.08)


def test_gamma_event_height_is_energy() -> None:
    src = GammaSource(seed=9, noise=0.0)
    for _ in range(100):
        e = src.event()
        energy = src.last_truth["energy_kev"]
        assert e["ch1"].max() == pytest.approx(energy * src.gain, rel=1e-5, abs=1e-7)
        if energy > 1:
            assert int(np.argmax(e["ch1"])) == src.trigger_position


def test_gamma_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        GammaSource(lines=[])
    with pytest.raises(ValueError):
        GammaSource(photo_fraction=2)
    with pytest.raises(ValueError):
        MuonDetector(double_pulse_fraction=-0.1)


def test_paced_yields_every_event_in_order() -> None:
    from mimocorb2.sim.pulses import paced

    events = [np.full(2, i) for i in range(5)]
    assert [int(e[0]) for e in paced(iter(events), 0)] == [0, 1, 2, 3, 4]
    assert [int(e[0]) for e in paced(iter(events), 1e6)] == [0, 1, 2, 3, 4]
