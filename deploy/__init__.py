"""The deploy stage: Kubernetes manifests for tritonserver replicas reading one published repository
(`tritonize deploy k8s`, deploy/k8s.py)."""
