//! cloister-firmware
