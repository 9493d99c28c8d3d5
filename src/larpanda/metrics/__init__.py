"""larpanda.metrics"""
