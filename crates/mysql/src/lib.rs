//! MySQL/MariaDB adapter: diesel-async repositories, schema and embedded migrations.
