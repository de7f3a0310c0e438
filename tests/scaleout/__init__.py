"""Scale-out and failover tests on real replicated and sharded engines.

Each test starts its own servers on free loopback ports (never the shared
Redis, PostgreSQL or MariaDB), kills one under load from the example app
served by gunicorn, and prints what it measured with the ``figure`` helper:

- Redis Sentinel (1 master, 2 replicas, 3 sentinels) and Redis Cluster
  (3 masters, 3 replicas): :mod:`tests.scaleout.test_redis_ha`;
- PostgreSQL primary + synchronous standby behind a libpq multi-host URL,
  and Patroni + etcd: :mod:`tests.scaleout.test_postgres_ha`;
- MariaDB Galera (3 nodes) and Spider (a front and 2 shards):
  :mod:`tests.scaleout.test_mariadb_ha`;
- the SQL fixes these engines needed: :mod:`tests.scaleout.test_sql_fixes`.

:mod:`tests.scaleout.engines` starts the servers, :mod:`tests.scaleout.load`
drives the load and counts failures, recovery and lost writes.
"""
