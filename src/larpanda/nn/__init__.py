"""larpanda.nn"""
