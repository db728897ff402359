"""Ports for servers started on demand: never the same one twice from this process, so that two
servers started together, or one server's HTTP and metrics ports, cannot collide (a CI run once lost
a server to "cannot listen to HTTP requests and metrics requests at the same address and port")."""
import socket

from tritonize.serving import ports
from tritonize.serving.server import free_port


def test_no_port_is_handed_out_twice_and_each_is_free_when_handed_out():
    handed = [free_port() for _ in range(500)]  # far more binds of port 0 than it takes to see a repeat
    assert len(set(handed)) == len(handed)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ports.HOST, handed[-1]))  # free: nothing else holds it


def test_distinct_ports_for_several_servers_at_once():
    chosen = ports.distinct_free_ports(9)  # three servers' HTTP, gRPC and metrics
    assert len(set(chosen)) == 9 and not set(chosen) & set(list(ports._issued)[:-9])
