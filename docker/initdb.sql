-- The sample tables of docker/pipeline.yaml, created in the Compose stack's local seekdb by its
-- database-init service (kept where they exist). The same tables as `obflow demo` and the load
-- generator (obflow_dev/loadgen.py) write.
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE IF NOT EXISTS shop.customers (id BIGINT PRIMARY KEY, name VARCHAR(80) NOT NULL,
  email VARCHAR(120) NULL, tier VARCHAR(10) NOT NULL, created_at TIMESTAMP(6) NOT NULL, version INT NOT NULL);
CREATE TABLE IF NOT EXISTS shop.orders (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL,
  status VARCHAR(16) NOT NULL, amount DECIMAL(12,2) NOT NULL, note VARCHAR(200) NULL,
  created_at DATETIME(6) NOT NULL, paid_at TIMESTAMP(6) NULL, version INT NOT NULL);
CREATE TABLE IF NOT EXISTS shop.order_lines (order_id BIGINT NOT NULL, line_no INT NOT NULL,
  sku VARCHAR(20) NOT NULL, qty INT NOT NULL, price DECIMAL(10,2) NOT NULL, version INT NOT NULL,
  PRIMARY KEY (order_id, line_no));
