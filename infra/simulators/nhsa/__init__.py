"""The NHSA medical-insurance platform simulator (医疗保障信息平台, Fuzhou 350100).

It speaks the designated-institution interface: one JSON envelope per call on
/fsi/api/rsfComIfsService/callService behind the TIF gateway signature, the transactions
9001/9002, 1101, 2201/2202, 2204/2205, 2206/2207/2208, 2601, 5203 and 3201, real outpatient policy
maths (policy.py), persistent books in its own SQLite file, and fault injection under /sim.
Start it with `python -m infra.simulators.nhsa`.
"""
