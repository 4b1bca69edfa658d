#!/bin/sh
# Creates the two databases pressroom's services use, each with its own login role:
#   optuna  (owner pressroom): the Optuna studies, written by `pressroom search`, read by the dashboard
#   mlflow  (owner mlflow):    the MLflow tracking server's backend store
# The official postgres image runs this once, when its data volume is empty. The passwords come
# from the container's environment (deploy/.env through compose), never from this file; psql
# quotes them itself (:'var'), so any character is safe.
set -eu
: "${PGPASSWORD_PRESSROOM:?PGPASSWORD_PRESSROOM is not set}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v optuna_db="${OPTUNA_DB:-optuna}" -v optuna_role="${OPTUNA_ROLE:-pressroom}" \
    -v optuna_pw="$PGPASSWORD_PRESSROOM" \
    -v mlflow_db="${MLFLOW_DB:-mlflow}" -v mlflow_role="${MLFLOW_ROLE:-mlflow}" \
    -v mlflow_pw="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE :"optuna_role" LOGIN PASSWORD :'optuna_pw';
CREATE DATABASE :"optuna_db" OWNER :"optuna_role";
CREATE ROLE :"mlflow_role" LOGIN PASSWORD :'mlflow_pw';
CREATE DATABASE :"mlflow_db" OWNER :"mlflow_role";
SQL
