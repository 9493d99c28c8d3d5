"""larpanda.train"""
