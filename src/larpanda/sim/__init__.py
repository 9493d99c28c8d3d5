"""larpanda.sim"""
