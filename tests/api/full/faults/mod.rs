//! The fault matrix: real `tokenvend` processes on PostgreSQL, with a TCP fault proxy
//! of the tests' own in front of PostgreSQL and of the edX stand-in, killed or cut off
//! at the worst moments. Each case's name states what holds (README, "Faults and what
//! holds").

mod commits;
mod edx;
mod fleet;
mod kills;
mod outages;
mod proxy;
