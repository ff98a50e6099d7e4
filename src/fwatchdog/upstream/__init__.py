"""The client side of http mode: pooled HTTP/1.1 connections to the upstream, tunnels."""
