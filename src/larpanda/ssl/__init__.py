"""larpanda.ssl"""
