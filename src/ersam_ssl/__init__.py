"""ersam_ssl: few-label, energy-efficient social ambiance measurement (speaker counting).

Follows ERSAM (Li et al., ICASSP 2023: hardware-aware NAS + uncertainty-driven knowledge distillation for
energy-efficient, real-time social ambiance measurement) and CountNet (Stöter et al., IEEE/ACM TASLP 2019).

``import ersam_ssl`` never imports NNI; the NAS module imports it lazily.
"""

from ersam_ssl.threads import set_passive_wait

# Before anything imports torch: OpenMP reads its wait policy once, at start-up (see ersam_ssl.threads).
set_passive_wait()

__version__ = "0.1.0"

__all__ = ["__version__", "pretrained"]


def pretrained(threads: int = 1):
    """The speaker counter shipped with the package, ready for analysis (see ``ersam_ssl.bundled``).

    Example:
        >>> counter = ersam_ssl.pretrained()
        >>> counts, confidence = counter(windows)   # windows: float32 [N, 80000] at 16 kHz
    """
    from ersam_ssl.bundled import pretrained as _pretrained

    return _pretrained(threads)
