"""A simulated downstream IEC 104 station (RTU) on c104's server, from the same profile the master reads."""
