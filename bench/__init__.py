"""Benchmarks: queue_beanstalk against raw greenstalk and a pipelined socket (issue #5),
one beanstalkd against two (issue 11), and the issue 15 targets: prefetch against a
pipelined socket, Queue against greenstalk with JSON, and RQ, dramatiq and Celery
beside queue_beanstalk (``--peers``).

Run ``python -m bench`` from the repository root (``make bench`` runs both CPU
placements and writes BENCHMARKS.md); ``python -m bench --help`` lists the options,
``--only handler`` runs one section.
"""
