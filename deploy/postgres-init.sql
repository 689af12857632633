-- Run once by the postgres image on a new data volume: Dagster's and MLflow's databases, owned by
-- POSTGRES_USER (the role the image creates). `make serve-stack` creates the same two itself.
CREATE DATABASE dagster;
CREATE DATABASE mlflow;
