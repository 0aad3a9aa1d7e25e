"""Where the operator mounts things in the database pods (the engine's configuration, TLS files,
credentials, data and WAL volumes): shared by the engine configuration it renders and the pods it builds."""

CONFIG_DIR = "/etc/omendb"
CONFIG_FILE = f"{CONFIG_DIR}/omendb.toml"
HTPASSWD_FILE = f"{CONFIG_DIR}/users.htpasswd"
TLS_DIR = f"{CONFIG_DIR}/tls"
TLS_CERT_FILE = f"{TLS_DIR}/tls.crt"
TLS_KEY_FILE = f"{TLS_DIR}/tls.key"
TLS_CA_FILE = f"{TLS_DIR}/ca.crt"
# Which pod is the primary: a key of NAME-config, read by `omendb serve --primary-pod-file` at start. It is
# not part of the config hash, so a failover rewrites it without restarting any pod.
PRIMARY_POD_KEY = "primary-pod"
PRIMARY_POD_FILE = f"{CONFIG_DIR}/{PRIMARY_POD_KEY}"
# "user:password" of the generated admin user, for replicas to stream from the primary.
REPLICATION_CREDENTIALS_FILE = f"{CONFIG_DIR}/replication/credentials"
DATA_DIR = "/var/lib/omendb/data"
WAL_DIR = "/var/lib/omendb/wal"
