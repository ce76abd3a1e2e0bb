//! Integration tests of failure prediction with the real tract runtime and the real model
//! files under `models/`.

mod dataset;
mod features;
mod loading;
mod parity;
mod repository;
mod support;
