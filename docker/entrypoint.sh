#!/usr/bin/env bash
# Container entrypoint for Spark on Kubernetes (the contract of Spark's own image entrypoint)
# and for plain use:
#   driver ARGS...    the driver pod: spark-submit in client mode inside the pod
#   executor          an executor pod: Spark passes its settings as SPARK_* environment variables
#   master | worker   a standalone master / worker (docker-compose or bare hosts)
#   anything else     run it (e.g. `curate ingest ...`, `bash`)
set -euo pipefail
SPARK_HOME="${SPARK_HOME:-/opt/spark/pyspark}"
export SPARK_HOME PYSPARK_PYTHON="${PYSPARK_PYTHON:-/opt/curate/.venv/bin/python}"

# Spark passes extra JVM options to executors as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ...
java_opts=()
while IFS='=' read -r key value; do
  case "$key" in SPARK_JAVA_OPT_*) java_opts+=("$value") ;; esac
done < <(env | sort -t_ -k4 -n)

case "${1:-}" in
  driver)
    shift
    exec "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS:-0.0.0.0}" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=${SPARK_DRIVER_BIND_ADDRESS:-0.0.0.0}" \
      --deploy-mode client "$@"
    ;;
  executor)
    shift
    exec java "${java_opts[@]}" \
      -Xms"${SPARK_EXECUTOR_MEMORY:-1g}" -Xmx"${SPARK_EXECUTOR_MEMORY:-1g}" \
      -cp "${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$SPARK_HOME/jars/*${SPARK_EXTRA_CLASSPATH:+:$SPARK_EXTRA_CLASSPATH}" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" \
      --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" \
      --hostname "${SPARK_EXECUTOR_POD_IP:-$(hostname -i)}" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
      --podName "${SPARK_EXECUTOR_POD_NAME:-$(hostname)}"
    ;;
  master)
    shift
    exec "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master "$@"
    ;;
  worker)
    shift
    exec "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker "$@"
    ;;
  "")
    exec bash
    ;;
  *)
    exec "$@"
    ;;
esac
