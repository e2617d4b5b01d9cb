//! The on-disk model of a Parachute box: the home and every path in it, `services.json`,
//! per-module `.env` files, pidfiles and the hub port file.
