//! Talking to byte topics, queues and services from a terminal or a shell script: `pub`, `sub`,
//! `send`, `recv` and `call`.
