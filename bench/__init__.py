"""Benchmarks: queue_beanstalk against raw greenstalk and a pipelined socket (issue #5),
and one beanstalkd against two (issue 11).

Run ``python -m bench`` from the repository root (``make bench`` runs both CPU
placements and writes BENCHMARKS.md); ``python -m bench --help`` lists the options.
"""
